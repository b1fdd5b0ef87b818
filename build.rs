//! Build facts for the report; no code generation and no CPU probing.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    println!("cargo:rustc-env=SOFTMAX_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=SOFTMAX_BUILD_TARGET={target}");
    println!("cargo:rustc-env=SOFTMAX_BUILD_TARGET_FEATURES={features}");
}
