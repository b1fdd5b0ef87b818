// Compiles ggml's base library and CPU backend directly with cc, plus the C
// shim: the sources of llama-cpp-sys-2 0.1.161 (llama.cpp/ggml, ggml 0.26.0),
// which ./fetch-ggml.sh copies into vendor/ggml (its own build script needs
// cmake and libclang; these sources need a C11 and a C++17 compiler only).
// No OpenMP, no llamafile sgemm, no repack / AMX / KleidiAI extra buffers.
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let g = root.join("vendor/ggml");
    assert!(
        g.join("src/ggml.c").exists(),
        "ggml's sources are not in {}: run ./fetch-ggml.sh first",
        g.display()
    );
    let src = g.join("src");
    let cpu = src.join("ggml-cpu");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out.join("ggml-version.h"),
        "#pragma once\n#define GGML_VERSION \"0.26.0\"\n#define GGML_COMMIT \"llama-cpp-sys-2-0.1.161\"\n",
    )
    .unwrap();

    let c_files = [
        src.join("ggml.c"),
        src.join("ggml-alloc.c"),
        src.join("ggml-quants.c"),
        cpu.join("ggml-cpu.c"),
        cpu.join("quants.c"),
        cpu.join("arch/x86/quants.c"),
        root.join("shim/shim.c"),
    ];
    let cpp_files = [
        src.join("ggml.cpp"),
        src.join("ggml-backend.cpp"),
        src.join("ggml-threading.cpp"),
        cpu.join("ggml-cpu.cpp"),
        cpu.join("repack.cpp"),
        cpu.join("arch/x86/repack.cpp"),
        cpu.join("hbm.cpp"),
        cpu.join("traits.cpp"),
        cpu.join("amx/amx.cpp"),
        cpu.join("amx/mmq.cpp"),
        cpu.join("tiled/tiled.cpp"),
        cpu.join("tiled/tiled-kernel.cpp"),
        cpu.join("binary-ops.cpp"),
        cpu.join("unary-ops.cpp"),
        cpu.join("vec.cpp"),
        cpu.join("ops.cpp"),
    ];

    let setup = |b: &mut cc::Build| {
        b.include(&out)
            .include(g.join("include"))
            .include(&src)
            .include(&cpu)
            .opt_level(3)
            .debug(false)
            .flag("-march=native")
            .define("NDEBUG", None)
            .define("_GNU_SOURCE", None)
            .define("_XOPEN_SOURCE", "600")
            .define("GGML_USE_CPU", None)
            .define("GGML_SCHED_MAX_COPIES", "4")
            .warnings(false)
            .extra_warnings(false);
    };

    let mut c = cc::Build::new();
    setup(&mut c);
    c.std("c11").files(&c_files).compile("ggml_c");

    let mut cpp = cc::Build::new();
    setup(&mut cpp);
    cpp.cpp(true)
        .std("c++17")
        .files(&cpp_files)
        .compile("ggml_cpp");

    println!("cargo:rustc-link-lib=pthread");
    println!("cargo:rustc-link-lib=m");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
}
