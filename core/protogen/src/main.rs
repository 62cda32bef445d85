fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proto = &args[1];
    let out = &args[2];
    let dir = std::path::Path::new(proto).parent().unwrap();
    let fds = protox::compile([proto], [dir]).expect("compile proto");
    let mut cfg = prost_build::Config::new();
    cfg.bytes(["."]);
    cfg.out_dir(out);
    cfg.compile_fds(fds).expect("generate");
}
