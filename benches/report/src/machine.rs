//! Facts about the machine and the build the report runs on: the CPU's name,
//! its cores, the last-level cache, how busy other processes keep it, and the
//! cargo profile, target and compile-time features (from build.rs).

use softmax::Isa;

/// The cargo profile the report was built with.
pub const BUILD_PROFILE: &str = env!("REPORT_BUILD_PROFILE");
/// The target triple.
pub const BUILD_TARGET: &str = env!("REPORT_BUILD_TARGET");
/// Target features enabled at compile time (the baseline; faster ISAs are chosen at run time).
pub const BUILD_TARGET_FEATURES: &str = env!("REPORT_BUILD_TARGET_FEATURES");

/// Used when the last-level cache size cannot be read.
const ASSUMED_LLC_BYTES: usize = 32 << 20;

/// What the report says about where it ran.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub llc_bytes: usize,
    /// Where `llc_bytes` came from: "sysfs", "sysctl" or "assumed".
    pub llc_source: &'static str,
    /// Cores kept busy by other processes just before and after the run.
    pub busy_before: Option<f64>,
    pub busy_after: Option<f64>,
}

impl Machine {
    /// Probes everything but `busy_after`; takes about 0.3 s (the busy-core window).
    pub fn probe() -> Machine {
        let busy_before = busy_cores();
        let (llc_bytes, llc_source) = last_level_cache();
        Machine {
            cpu: cpu_model(),
            cores: cores(),
            llc_bytes,
            llc_source,
            busy_before,
            busy_after: None,
        }
    }
}

/// Logical cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// "scalar, avx2": the ISAs' names, in order.
pub fn isa_names(isas: &[Isa]) -> String {
    isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

/// /proc/cpuinfo's "model name" on Linux, sysctl's brand string on macOS.
pub fn cpu_model() -> String {
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let model = info
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            return model;
        }
    }
    sysctl("machdep.cpu.brand_string").unwrap_or_else(|| "unknown".into())
}

fn sysctl(name: &str) -> Option<String> {
    let out = std::process::Command::new("sysctl")
        .args(["-n", name])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// How many cores other processes kept busy over a short window (Linux
/// /proc/stat), to flag runs disturbed by other work. Sampled while the report
/// itself is idle; unlike the load average it does not lag by a minute.
pub fn busy_cores() -> Option<f64> {
    fn ticks() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait ...: idle and iowait are the idle ticks.
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((fields.iter().sum(), idle))
    }
    let (total0, idle0) = ticks()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (total1, idle1) = ticks()?;
    let total = total1.checked_sub(total0).filter(|&t| t > 0)? as f64;
    let busy = total - idle1.saturating_sub(idle0) as f64;
    Some(busy / total * cores() as f64)
}

/// The largest data or unified cache of CPU 0, and where that figure came from.
pub fn last_level_cache() -> (usize, &'static str) {
    let mut best = 0usize;
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(kind), Some(size)) = (read("type"), read("size")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let size = size.trim();
        let (digits, unit) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
        let scale = match unit {
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => 1,
        };
        best = best.max(digits.parse::<usize>().unwrap_or(0) * scale);
    }
    if best > 0 {
        return (best, "sysfs");
    }
    for name in ["hw.l3cachesize", "hw.l2cachesize"] {
        if let Some(bytes) = sysctl(name).and_then(|s| s.parse().ok()).filter(|&b| b > 0) {
            return (bytes, "sysctl");
        }
    }
    (ASSUMED_LLC_BYTES, "assumed")
}
