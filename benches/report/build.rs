//! Build facts the report prints and writes: the cargo profile, the target
//! triple and the target features enabled at compile time.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (var, name) in [
        ("PROFILE", "REPORT_BUILD_PROFILE"),
        ("TARGET", "REPORT_BUILD_TARGET"),
        ("CARGO_CFG_TARGET_FEATURE", "REPORT_BUILD_TARGET_FEATURES"),
    ] {
        let value = std::env::var(var).unwrap_or_default();
        println!("cargo:rustc-env={name}={value}");
    }
}
