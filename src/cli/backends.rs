//! `frugal backends`: what each backend would run on here, or why it cannot; plugins found on
//! `FRUGAL_PLUGIN_PATH` too, or why each was refused.

use frugal::format::bytes as human_bytes;

/// Arguments of `frugal backends`.
#[derive(Debug, clap::Args)]
pub struct BackendsArgs {
    /// Print one JSON object per backend instead of a table.
    #[arg(long)]
    json: bool,
}

/// A size limit as people read it (the CPU's are the address space: "none").
fn limit(bytes: u64) -> String {
    if bytes >= 1 << 62 {
        "no limit".into()
    } else {
        human_bytes(bytes as usize)
    }
}

/// Lists the backends; the exit code is zero as long as the listing itself worked.
pub fn run(args: BackendsArgs) -> anyhow::Result<()> {
    let all = frugal::available(&frugal::BackendOptions::default());
    if args.json {
        let items: Vec<serde_json::Value> = all
            .iter()
            .map(|r| match &r.status {
                Ok(c) => serde_json::json!({
                    "name": r.name, "available": true, "device": c.device,
                    "storage": c.storage.iter().map(|d| format!("{d:?}").to_lowercase()).collect::<Vec<_>>(),
                    "max_buffer_bytes": c.max_buffer_bytes, "max_binding_bytes": c.max_binding_bytes,
                }),
                Err(why) => serde_json::json!({"name": r.name, "available": false, "reason": why}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    for r in &all {
        // Plugins are listed by path: a long name gets a line of its own.
        let name = if r.name.len() > 12 {
            println!("{}", r.name);
            ""
        } else {
            r.name.as_str()
        };
        match &r.status {
            Ok(c) => {
                let storage: Vec<String> =
                    c.storage.iter().map(|d| format!("{d:?}").to_lowercase()).collect();
                println!("{name:<12} available    {}", c.device);
                println!(
                    "{:<12}              storage {}, largest buffer {}, largest binding {}",
                    "",
                    storage.join("/"),
                    limit(c.max_buffer_bytes),
                    limit(c.max_binding_bytes)
                );
            }
            Err(why) => println!("{name:<12} unavailable  {why}"),
        }
    }
    Ok(())
}
