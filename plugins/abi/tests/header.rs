//! The C header `plugins/include/frugal_plugin.h` stays in sync with the Rust definitions: every
//! constant has the same value, every record the same fields in the same order at the same
//! offsets, and the same size. The layout is computed from the header by C's rules (pure Rust,
//! no compiler needed); where a C compiler is available, the header is also compiled and its
//! `sizeof`/`offsetof` compared.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;

use frugal_plugin_abi::*;

fn header_text() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include/frugal_plugin.h");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The header without comments.
fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        let j = rest.find("*/").expect("unterminated comment");
        rest = &rest[j + 2..];
    }
    out.push_str(rest);
    out.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Numeric `#define`s, and string ones separately.
fn defines(text: &str) -> (HashMap<String, u64>, HashMap<String, String>) {
    let (mut nums, mut strs) = (HashMap::new(), HashMap::new());
    for line in text.lines() {
        let mut t = line.split_whitespace();
        if t.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (t.next(), t.next()) else { continue };
        if let Ok(v) = value.parse::<u64>() {
            nums.insert(name.to_string(), v);
        } else if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            strs.insert(name.to_string(), s.to_string());
        }
    }
    (nums, strs)
}

/// One field of a C record: its name, its type (`*` for any pointer) and array length.
#[derive(Debug)]
struct Field {
    name: String,
    ty: String,
    count: u64,
}

/// The records of the header, in order.
fn records(text: &str, nums: &HashMap<String, u64>) -> Vec<(String, Vec<Field>)> {
    let body: String =
        text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("typedef struct") {
        rest = &rest[i..];
        let open = rest.find('{').unwrap();
        let close = rest.find('}').unwrap();
        let inner = &rest[open + 1..close];
        let after = &rest[close + 1..];
        let name = after[..after.find(';').unwrap()].trim().to_string();
        let fields = inner
            .split(';')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| parse_field(d, nums))
            .collect();
        out.push((name, fields));
        rest = &rest[close..];
    }
    out
}

fn parse_field(decl: &str, nums: &HashMap<String, u64>) -> Field {
    let decl = decl.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(i) = decl.find("(*") {
        let name = decl[i + 2..decl[i..].find(')').unwrap() + i].trim().to_string();
        return Field { name, ty: "*".into(), count: 1 };
    }
    let decl = decl.replace("const ", "");
    let (decl, count) = match decl.find('[') {
        Some(i) => {
            let n = decl[i + 1..decl.find(']').unwrap()].trim();
            let count = n.parse().unwrap_or_else(|_| nums[n]);
            (decl[..i].to_string(), count)
        }
        None => (decl.clone(), 1),
    };
    let pointer = decl.contains('*');
    let decl = decl.replace('*', " ");
    let mut toks: Vec<&str> = decl.split_whitespace().collect();
    let name = toks.pop().unwrap().to_string();
    let ty = if pointer { "*".to_string() } else { toks.join(" ") };
    Field { name, ty, count }
}

/// A record's size, alignment and field offsets, computed from the header.
type CLayout = (usize, usize, Vec<(String, usize)>);
/// A record's name, size and field offsets, from Rust.
type RustLayout = (&'static str, usize, Vec<(&'static str, usize)>);

/// `(size, align, field offsets)` of every record by C's layout rules.
fn c_layouts(recs: &[(String, Vec<Field>)]) -> HashMap<String, CLayout> {
    let ptr = size_of::<usize>();
    let mut types: HashMap<String, (usize, usize)> = HashMap::from([
        ("uint32_t".to_string(), (4, 4)),
        ("uint64_t".to_string(), (8, 8)),
        ("float".to_string(), (4, 4)),
        ("char".to_string(), (1, 1)),
        ("*".to_string(), (ptr, ptr)),
        ("FrugalStatus".to_string(), (4, 4)),
        ("FrugalBackend".to_string(), (ptr, ptr)),
    ]);
    let mut out = HashMap::new();
    for (name, fields) in recs {
        let (mut at, mut align, mut offsets) = (0usize, 1usize, Vec::new());
        for f in fields {
            let (size, a) =
                *types.get(&f.ty).unwrap_or_else(|| panic!("{name}.{}: type {}", f.name, f.ty));
            at = at.next_multiple_of(a);
            offsets.push((f.name.clone(), at));
            at += size * f.count as usize;
            align = align.max(a);
        }
        let size = at.next_multiple_of(align);
        types.insert(name.clone(), (size, align));
        out.insert(name.clone(), (size, align, offsets));
    }
    out
}

macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        (stringify!($t), size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
    };
}

/// The Rust side: every record, every field, in order.
fn rust_layouts() -> Vec<RustLayout> {
    vec![
        layout!(FrugalError { message }),
        layout!(FrugalOptions { struct_size, threads }),
        layout!(FrugalCapabilities {
            storage_mask,
            reserved,
            max_buffer_bytes,
            max_binding_bytes,
            device,
            kernels
        }),
        layout!(FrugalTensor { dtype, rank, dims, data, len }),
        layout!(FrugalWindow { offset, dtype, rank, dims, capacity, row_stride, first_row, rows }),
        layout!(FrugalWeight { id, rank, reserved, dims }),
        layout!(FrugalOperand { kind, reserved, window, weight }),
        layout!(FrugalActivation { kind, p0, p1, reserved }),
        layout!(FrugalScratch { offset, bytes }),
        layout!(FrugalConv {
            kernel,
            strides,
            dilations,
            pads,
            groups,
            act,
            has_bias,
            has_residual,
            x,
            w,
            b,
            r,
            y
        }),
        layout!(FrugalConvTranspose {
            kernel,
            strides,
            dilations,
            pads,
            output_padding,
            groups,
            act,
            has_bias,
            reserved,
            x,
            w,
            b,
            y
        }),
        layout!(FrugalPool {
            kind,
            ceil_mode,
            count_include_pad,
            reserved,
            kernel,
            strides,
            dilations,
            pads,
            x,
            y
        }),
        layout!(FrugalGlobalAvgPool { x, y }),
        layout!(FrugalAffine { act, x, scale, shift, y }),
        layout!(FrugalUnary { act, x, y }),
        layout!(FrugalBinary { kind, reserved, act, a, b, y }),
        layout!(FrugalConcat { axis, count, xs, y }),
        layout!(FrugalResize { mode, coord, nearest, reserved, scales, size, x, y }),
        layout!(FrugalGemm { alpha, beta, trans_a, trans_b, act, has_c, reserved, a, b, c, y }),
        layout!(FrugalMatMul { act, a, b, y }),
        layout!(FrugalReduce { kind, keepdims, naxes, axes, x, y }),
        layout!(FrugalSoftmax { axis, coerce_2d, reserved, x, y }),
        layout!(FrugalTranspose { rank, perm, x, y }),
        layout!(FrugalCopy { x, y }),
        layout!(FrugalKernel { family, reserved, call }),
        layout!(FrugalPluginHeader { abi_version, struct_size }),
        layout!(FrugalPluginModule {
            abi_version,
            struct_size,
            name,
            create,
            release,
            capabilities,
            check,
            alloc_arena,
            upload,
            prepare,
            workspace_bytes,
            write,
            read,
            sync,
            weight_bytes,
            conv,
            conv_transpose,
            pool,
            global_avg_pool,
            affine,
            unary,
            binary,
            concat,
            resize,
            gemm,
            matmul,
            reduce,
            softmax,
            transpose,
            copy
        }),
    ]
}

macro_rules! consts {
    ($($c:ident),* $(,)?) => { vec![$((stringify!($c), $c as u64)),*] };
}

/// Every constant of the ABI.
fn rust_constants() -> Vec<(&'static str, u64)> {
    consts!(
        FRUGAL_PLUGIN_ABI_VERSION,
        FRUGAL_MAX_RANK,
        FRUGAL_ERROR_CAPACITY,
        FRUGAL_DEVICE_CAPACITY,
        FRUGAL_KERNELS_CAPACITY,
        FRUGAL_OK,
        FRUGAL_ERROR,
        FRUGAL_PANIC,
        FRUGAL_DTYPE_F32,
        FRUGAL_DTYPE_F16,
        FRUGAL_DTYPE_I64,
        FRUGAL_DTYPE_I32,
        FRUGAL_DTYPE_U8,
        FRUGAL_FAMILY_CONV,
        FRUGAL_FAMILY_CONV_TRANSPOSE,
        FRUGAL_FAMILY_POOL,
        FRUGAL_FAMILY_GLOBAL_AVG_POOL,
        FRUGAL_FAMILY_AFFINE,
        FRUGAL_FAMILY_UNARY,
        FRUGAL_FAMILY_BINARY,
        FRUGAL_FAMILY_CONCAT,
        FRUGAL_FAMILY_RESIZE,
        FRUGAL_FAMILY_GEMM,
        FRUGAL_FAMILY_MATMUL,
        FRUGAL_FAMILY_REDUCE,
        FRUGAL_FAMILY_SOFTMAX,
        FRUGAL_FAMILY_TRANSPOSE,
        FRUGAL_FAMILY_COPY,
        FRUGAL_FAMILY_COUNT,
        FRUGAL_ACT_NONE,
        FRUGAL_ACT_RELU,
        FRUGAL_ACT_CLIP,
        FRUGAL_ACT_LEAKY_RELU,
        FRUGAL_ACT_SIGMOID,
        FRUGAL_ACT_HARD_SIGMOID,
        FRUGAL_ACT_HARD_SWISH,
        FRUGAL_ACT_TANH,
        FRUGAL_ACT_ERF,
        FRUGAL_POOL_MAX,
        FRUGAL_POOL_AVG,
        FRUGAL_BINARY_ADD,
        FRUGAL_BINARY_SUB,
        FRUGAL_BINARY_MUL,
        FRUGAL_BINARY_DIV,
        FRUGAL_BINARY_PRELU,
        FRUGAL_REDUCE_MEAN,
        FRUGAL_REDUCE_SUM,
        FRUGAL_REDUCE_MAX,
        FRUGAL_RESIZE_NEAREST,
        FRUGAL_RESIZE_LINEAR,
        FRUGAL_COORD_HALF_PIXEL,
        FRUGAL_COORD_PYTORCH_HALF_PIXEL,
        FRUGAL_COORD_ALIGN_CORNERS,
        FRUGAL_COORD_ASYMMETRIC,
        FRUGAL_COORD_TF_HALF_PIXEL_FOR_NEAREST,
        FRUGAL_NEAREST_ROUND_PREFER_FLOOR,
        FRUGAL_NEAREST_ROUND_PREFER_CEIL,
        FRUGAL_NEAREST_FLOOR,
        FRUGAL_NEAREST_CEIL,
        FRUGAL_OPERAND_ARENA,
        FRUGAL_OPERAND_WEIGHT,
    )
}

#[test]
fn header_constants_match_the_rust_ones() {
    let text = strip_comments(&header_text());
    let (nums, strs) = defines(&text);
    let rust = rust_constants();
    for (name, v) in &rust {
        assert_eq!(nums.get(*name), Some(v), "{name} in the header");
    }
    let mut extra: Vec<&String> =
        nums.keys().filter(|k| !rust.iter().any(|(n, _)| n == k)).collect();
    extra.sort();
    assert!(extra.is_empty(), "header constants unknown to the Rust side: {extra:?}");
    let entry = std::str::from_utf8(FRUGAL_PLUGIN_ENTRY).unwrap().trim_end_matches('\0');
    assert_eq!(strs.get("FRUGAL_PLUGIN_ENTRY").map(String::as_str), Some(entry));
}

#[test]
fn header_records_match_the_rust_layouts() {
    let text = strip_comments(&header_text());
    let (nums, _) = defines(&text);
    let recs = records(&text, &nums);
    let c = c_layouts(&recs);
    let rust = rust_layouts();
    assert_eq!(recs.len(), rust.len(), "records in the header vs the Rust list");
    for (name, size, fields) in &rust {
        let (csize, _, cfields) =
            c.get(*name).unwrap_or_else(|| panic!("{name} not in the header"));
        let want: Vec<(String, usize)> = fields.iter().map(|(f, o)| (f.to_string(), *o)).collect();
        assert_eq!(cfields, &want, "{name}: fields and offsets (C vs Rust)");
        assert_eq!(csize, size, "{name}: size");
    }
}

/// Compiles a program printing the header's `sizeof`/`offsetof` with the system C compiler and
/// compares with Rust; skipped (with a message) when there is no compiler.
#[test]
fn a_c_compiler_agrees_with_the_rust_layouts() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("frugal-plugin-header");
    std::fs::create_dir_all(&dir).unwrap();
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include");
    let rust = rust_layouts();
    let mut src =
        String::from("#include <stdio.h>\n#include \"frugal_plugin.h\"\nint main(void) {\n");
    for (name, _, fields) in &rust {
        src += &format!("  printf(\"{name} %zu\\n\", sizeof({name}));\n");
        for (f, _) in fields {
            src += &format!("  printf(\"{name}.{f} %zu\\n\", offsetof({name}, {f}));\n");
        }
    }
    src += "  return 0;\n}\n";
    let c = dir.join("layout.c");
    std::fs::write(&c, src).unwrap();
    let exe = dir.join("layout");
    let built = std::process::Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .status();
    match built {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("the header does not compile with {cc}: {s}"),
        Err(e) => {
            eprintln!("skipping: no C compiler ({cc}: {e})");
            return;
        }
    }
    let out = std::process::Command::new(&exe).output().unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    let mut want = String::new();
    for (name, size, fields) in &rust {
        want += &format!("{name} {size}\n");
        for (f, o) in fields {
            want += &format!("{name}.{f} {o}\n");
        }
    }
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w, "C compiler (left) vs Rust (right)");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
