//! What this process may use: CPU cores (affinity mask, cgroup quota, Slurm), memory
//! (cgroup limit, `/proc/meminfo`, Slurm) and NVIDIA GPUs (NVML, loaded at run time).
//!
//! Every source is optional: a missing file, variable or driver narrows nothing and never
//! fails the probe. [`Sources`] lets tests describe a machine instead of reading this one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One NVIDIA GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Index among the GPUs this process sees (after `CUDA_VISIBLE_DEVICES`).
    pub index: usize,
    /// Product name, e.g. `NVIDIA A100-SXM4-80GB`.
    pub name: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Free memory in bytes when probed (other processes may hold the rest).
    pub free_bytes: u64,
    /// CUDA compute capability `(major, minor)`.
    pub compute_capability: (u32, u32),
    /// NVML's UUID (`GPU-…`), for matching `CUDA_VISIBLE_DEVICES` entries given as UUIDs.
    #[serde(default)]
    pub uuid: String,
}

impl Gpu {
    /// A GPU described by hand (tests, what-if plans): all of its memory free, no UUID.
    pub fn described(name: &str, memory_bytes: u64, compute_capability: (u32, u32)) -> Self {
        Self {
            index: 0,
            name: name.into(),
            memory_bytes,
            free_bytes: memory_bytes,
            compute_capability,
            uuid: String::new(),
        }
    }

    /// bfloat16 tensor cores (Ampere, compute capability 8.0, and later).
    pub fn supports_bf16(&self) -> bool {
        self.compute_capability.0 >= 8
    }

    /// float16 tensor cores (Volta, 7.0, and later).
    pub fn supports_f16(&self) -> bool {
        self.compute_capability.0 >= 7
    }
}

/// The Slurm allocation this process runs in, from the variables Slurm sets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlurmAllocation {
    /// `SLURM_JOB_ID`.
    pub job_id: Option<String>,
    /// `SLURM_CPUS_PER_TASK`.
    pub cpus_per_task: Option<usize>,
    /// `SLURM_MEM_PER_NODE`, or `SLURM_MEM_PER_CPU` × CPUs, in bytes.
    pub memory_bytes: Option<u64>,
    /// GPUs granted: `SLURM_GPUS_ON_NODE`, else the count in `SLURM_GPUS` /
    /// `SLURM_GPUS_PER_NODE` / `SLURM_JOB_GPUS`.
    pub gpus: Option<usize>,
}

/// What the probe found, with the source of each limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Logical CPUs the process may run on.
    pub cpus: usize,
    /// Where the CPU count came from (`affinity`, `cgroup`, `slurm`, …).
    pub cpus_source: String,
    /// Bytes of memory available to this process.
    pub memory_bytes: u64,
    /// Where the memory figure came from.
    pub memory_source: String,
    /// Total memory of the machine (`MemTotal`), bytes.
    pub machine_memory_bytes: Option<u64>,
    /// The Slurm allocation, when inside one.
    pub slurm: Option<SlurmAllocation>,
    /// Visible NVIDIA GPUs (empty: none, or no driver).
    pub gpus: Vec<Gpu>,
    /// Why there are no GPUs, when there are none (no NVML library, no device, hidden by
    /// `CUDA_VISIBLE_DEVICES`, …).
    pub gpu_note: Option<String>,
}

impl Hardware {
    /// Describes a machine directly (tests, what-if plans): `cpus`, `memory_bytes`, GPUs.
    pub fn described(cpus: usize, memory_bytes: u64, gpus: Vec<Gpu>) -> Self {
        Self {
            cpus,
            cpus_source: "described".into(),
            memory_bytes,
            memory_source: "described".into(),
            machine_memory_bytes: Some(memory_bytes),
            slurm: None,
            gpu_note: gpus.is_empty().then(|| "described without GPUs".into()),
            gpus,
        }
    }
}

/// Where the probe reads from: the real machine ([`Sources::this_machine`]) or a described
/// one (a directory standing in for `/`, an environment, an affinity count, GPUs).
#[derive(Clone, Debug)]
pub struct Sources {
    /// Stands in for `/`: `proc/meminfo`, `proc/self/cgroup`, `sys/fs/cgroup/…` are read
    /// below it.
    pub root: PathBuf,
    /// Environment variables (Slurm, `CUDA_VISIBLE_DEVICES`).
    pub env: BTreeMap<String, String>,
    /// CPUs in the affinity mask (`None`: unknown).
    pub affinity: Option<usize>,
    /// GPUs as NVML would list them, before `CUDA_VISIBLE_DEVICES` (`Err`: why none).
    pub gpus: Result<Vec<Gpu>, String>,
}

impl Sources {
    /// This process on this machine. Loads NVML if the driver is installed.
    pub fn this_machine() -> Self {
        Self {
            root: PathBuf::from("/"),
            env: std::env::vars().collect(),
            affinity: affinity_cpus(),
            gpus: crate::nvml::gpus(),
        }
    }
}

/// Probes this process on this machine.
pub fn probe() -> Hardware {
    probe_from(&Sources::this_machine())
}

/// Probes a described machine.
pub fn probe_from(s: &Sources) -> Hardware {
    let slurm = slurm_allocation(&s.env);
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    let (mut cpus, mut cpus_source) = match s.affinity {
        Some(n) => (n, "affinity mask".to_string()),
        None => (online, "available parallelism".to_string()),
    };
    let cgroup = cgroup_dir(&s.root);
    if let Some(q) = cgroup.as_deref().and_then(cpu_quota) {
        let q = q.ceil().max(1.0) as usize;
        if q < cpus {
            (cpus, cpus_source) = (q, "cgroup CPU quota".into());
        }
    }
    if let Some(n) = slurm.as_ref().and_then(|a| a.cpus_per_task) {
        if n < cpus {
            (cpus, cpus_source) = (n, "SLURM_CPUS_PER_TASK".into());
        }
    }

    let (memory, memory_source, total) = memory_from(&s.root, cgroup.as_deref(), slurm.as_ref());

    let (gpus, gpu_note) = visible_gpus(&s.gpus, &s.env, slurm.as_ref());
    Hardware {
        cpus: cpus.max(1),
        cpus_source,
        memory_bytes: memory,
        memory_source,
        machine_memory_bytes: total,
        slurm,
        gpus,
        gpu_note,
    }
}

/// Memory this process may use (the least of `MemAvailable`, the cgroup limit's headroom and
/// the Slurm allocation), where that figure came from, and the machine's total.
fn memory_from(
    root: &Path,
    cgroup: Option<&Path>,
    slurm: Option<&SlurmAllocation>,
) -> (u64, String, Option<u64>) {
    let meminfo = read(&root.join("proc/meminfo")).map(|t| parse_meminfo(&t));
    let total = meminfo.as_ref().and_then(|m| m.get("MemTotal").copied());
    let (mut memory, mut memory_source) = match meminfo
        .as_ref()
        .and_then(|m| m.get("MemAvailable").copied())
    {
        Some(a) => (a, "MemAvailable".to_string()),
        None => (total.unwrap_or(u64::MAX), "MemTotal".to_string()),
    };
    if let Some((limit, used)) = cgroup.and_then(memory_limit) {
        let free = limit.saturating_sub(used);
        if free < memory {
            (memory, memory_source) = (free, "cgroup memory limit".into());
        }
    }
    if let Some(m) = slurm.and_then(|a| a.memory_bytes) {
        if m < memory {
            (memory, memory_source) = (m, "Slurm memory allocation".into());
        }
    }
    if memory == u64::MAX {
        (memory, memory_source) = (0, "unknown".into());
    }
    (memory, memory_source, total)
}

/// Memory this process may use now, in bytes, and where the figure came from: as
/// [`probe`] finds it, without asking for GPUs (cheap enough to call before any command).
/// `EM_MEMORY_LIMIT` (bytes, or with a K/M/G/T suffix) lowers it, to rehearse a smaller
/// machine.
pub fn available_memory() -> (u64, String) {
    let root = Path::new("/");
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let slurm = slurm_allocation(&env);
    let cgroup = cgroup_dir(root);
    let (mut bytes, mut source, _) = memory_from(root, cgroup.as_deref(), slurm.as_ref());
    if let Some(limit) = env.get("EM_MEMORY_LIMIT").and_then(|v| parse_size(v)) {
        if limit < bytes || source == "unknown" {
            (bytes, source) = (limit, "EM_MEMORY_LIMIT".into());
        }
    }
    (bytes, source)
}

/// `123`, `512M`, `4G`, `1.5T` (binary units) as bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * (1u64 << shift) as f64) as u64)
}

/// Work that would need more memory than this process may use.
#[derive(Debug, thiserror::Error)]
#[error("{what} needs about {} but {} is available ({source_name}); {hint}", human_bytes(*needed), human_bytes(*available))]
pub struct MemoryError {
    /// What was asked for.
    pub what: String,
    /// The estimate, bytes.
    pub needed: u64,
    /// What this process may use, bytes.
    pub available: u64,
    /// Where `available` came from.
    pub source_name: String,
    /// How to make it fit.
    pub hint: String,
}

/// Bytes of a block of `shape` elements of `each` bytes, for [`ensure_memory`]; `None` when
/// the product overflows (beyond any machine).
pub fn bytes_of(shape: &[u64], each: u64) -> Option<u64> {
    shape.iter().try_fold(each, |acc, &n| acc.checked_mul(n))
}

/// Bytes as a human figure (`512 B`, `1.5 GiB`, up to EiB for absurd sizes).
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Refuses work whose memory estimate (`needed` bytes; `None`: beyond any machine, e.g. a
/// size that overflows) exceeds what this process may use, naming `what` and a `hint`.
/// Where the available memory is unknown, only overflowing estimates are refused.
///
/// # Errors
/// [`MemoryError`] with the estimate and the available memory.
pub fn ensure_memory(what: &str, needed: Option<u64>, hint: &str) -> Result<(), MemoryError> {
    let (available, source) = available_memory();
    let needed_bytes = needed.unwrap_or(u64::MAX);
    if needed.is_some() && (source == "unknown" || needed_bytes <= available) {
        return Ok(());
    }
    Err(MemoryError {
        what: what.to_string(),
        needed: needed_bytes,
        available,
        source_name: source,
        hint: hint.to_string(),
    })
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// `/proc/meminfo` in bytes, by key.
fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let unit = match parts.next() {
                Some("kB") => 1024,
                _ => 1,
            };
            Some((k.trim().to_string(), n * unit))
        })
        .collect()
}

/// The process's cgroup directory: v2 (`0::/path`) under `sys/fs/cgroup`, else the v1
/// hierarchy root (`sys/fs/cgroup`, with `cpu/` and `memory/` below).
fn cgroup_dir(root: &Path) -> Option<PathBuf> {
    let base = root.join("sys/fs/cgroup");
    if !base.is_dir() {
        return None;
    }
    let own = read(&root.join("proc/self/cgroup"))
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        })
        .map(|p| base.join(p.trim_start_matches('/')))
        .filter(|d| d.is_dir());
    Some(own.unwrap_or(base))
}

/// CPUs the cgroup quota allows (`cpu.max` in v2, `cfs_quota_us / cfs_period_us` in v1).
fn cpu_quota(dir: &Path) -> Option<f64> {
    if let Some(t) = read(&dir.join("cpu.max")) {
        let mut it = t.split_whitespace();
        let (q, p) = (it.next()?, it.next().unwrap_or("100000"));
        return (q != "max")
            .then(|| q.parse::<f64>().ok().zip(p.parse::<f64>().ok()))?
            .filter(|(_, p)| *p > 0.0)
            .map(|(q, p)| q / p);
    }
    let q: f64 = read(&dir.join("cpu/cpu.cfs_quota_us"))?
        .trim()
        .parse()
        .ok()?;
    let p: f64 = read(&dir.join("cpu/cpu.cfs_period_us"))?
        .trim()
        .parse()
        .ok()?;
    (q > 0.0 && p > 0.0).then_some(q / p)
}

/// The cgroup memory limit and current usage, bytes (`None`: unlimited or unknown).
fn memory_limit(dir: &Path) -> Option<(u64, u64)> {
    let number = |p: PathBuf| read(&p).and_then(|t| t.trim().parse::<u64>().ok());
    let (limit, used) = if dir.join("memory.max").exists() {
        (
            number(dir.join("memory.max"))?,
            number(dir.join("memory.current")),
        )
    } else {
        (
            number(dir.join("memory/memory.limit_in_bytes"))?,
            number(dir.join("memory/memory.usage_in_bytes")),
        )
    };
    // v1 reports "no limit" as a number near 2⁶³.
    (limit < 1 << 60).then_some((limit, used.unwrap_or(0)))
}

fn slurm_allocation(env: &BTreeMap<String, String>) -> Option<SlurmAllocation> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let job_id = get("SLURM_JOB_ID").map(String::from);
    let number = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let cpus_per_task = number("SLURM_CPUS_PER_TASK").map(|n| n as usize);
    // Slurm gives memory in MiB.
    let memory_bytes = number("SLURM_MEM_PER_NODE")
        .or_else(|| {
            let cpus = cpus_per_task.unwrap_or(1) as u64;
            number("SLURM_MEM_PER_CPU").map(|m| m * cpus)
        })
        .map(|mib| mib << 20);
    let gpus = number("SLURM_GPUS_ON_NODE")
        .map(|n| n as usize)
        .or_else(|| {
            ["SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_JOB_GPUS"]
                .iter()
                .find_map(|k| get(k).map(gpu_count))
        });
    let any = job_id.is_some() || cpus_per_task.is_some() || memory_bytes.is_some();
    any.then_some(SlurmAllocation {
        job_id,
        cpus_per_task,
        memory_bytes,
        gpus,
    })
}

/// The GPU count of a Slurm GPU spec: `2`, `a100:2`, `0,1,3` (a list of indices).
fn gpu_count(spec: &str) -> usize {
    if spec.contains(',') {
        return spec.split(',').filter(|s| !s.trim().is_empty()).count();
    }
    let last = spec.rsplit(':').next().unwrap_or(spec);
    last.parse().unwrap_or(1)
}

/// NVML's list narrowed by `CUDA_VISIBLE_DEVICES` (indices or UUID prefixes, in order) and
/// by the Slurm GPU count.
fn visible_gpus(
    all: &Result<Vec<Gpu>, String>,
    env: &BTreeMap<String, String>,
    slurm: Option<&SlurmAllocation>,
) -> (Vec<Gpu>, Option<String>) {
    let all = match all {
        Ok(g) if g.is_empty() => return (vec![], Some("NVML lists no GPU".into())),
        Ok(g) => g,
        Err(why) => return (vec![], Some(why.clone())),
    };
    let mut gpus: Vec<Gpu> = match env.get("CUDA_VISIBLE_DEVICES").map(|v| v.trim()) {
        None => all.clone(),
        Some(list) => {
            let mut out = Vec::new();
            for entry in list.split(',').map(str::trim) {
                // CUDA stops at the first entry it cannot resolve.
                let found = match entry.parse::<usize>() {
                    Ok(i) => all.get(i),
                    Err(_) if entry.starts_with("GPU-") || entry.starts_with("MIG-") => all
                        .iter()
                        .find(|g| !g.uuid.is_empty() && g.uuid.starts_with(entry)),
                    Err(_) => None,
                };
                match found {
                    Some(g)
                        if !out
                            .iter()
                            .any(|o: &Gpu| o.uuid == g.uuid && o.index == g.index) =>
                    {
                        out.push(g.clone())
                    }
                    _ => break,
                }
            }
            out
        }
    };
    if let Some(n) = slurm.and_then(|s| s.gpus) {
        gpus.truncate(n);
    }
    for (i, g) in gpus.iter_mut().enumerate() {
        g.index = i;
    }
    let note = gpus
        .is_empty()
        .then(|| "CUDA_VISIBLE_DEVICES or the Slurm allocation hides every GPU".to_string());
    (gpus, note)
}

/// CPUs in this thread's affinity mask.
fn affinity_cpus() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bit set that sched_getaffinity fills; its size is passed.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                let n = libc::CPU_COUNT(&set);
                return (n > 0).then_some(n as usize);
            }
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, gib: u64, cc: (u32, u32), uuid: &str) -> Gpu {
        Gpu {
            uuid: uuid.into(),
            ..Gpu::described(name, gib << 30, cc)
        }
    }

    fn machine(files: &[(&str, &str)], env: &[(&str, &str)], affinity: usize) -> Sources {
        let root = tempfile::tempdir().unwrap().keep();
        for (p, text) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Sources {
            root,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            affinity: Some(affinity),
            gpus: Err("no NVML library (libnvidia-ml.so.1)".into()),
        }
    }

    const MEMINFO: &str =
        "MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:   12288000 kB\n";

    #[test]
    fn a_laptop_without_limits_uses_meminfo_and_the_affinity_mask() {
        let h = probe_from(&machine(&[("proc/meminfo", MEMINFO)], &[], 8));
        assert_eq!((h.cpus, h.cpus_source.as_str()), (8, "affinity mask"));
        assert_eq!(h.memory_bytes, 12_288_000 * 1024);
        assert_eq!(h.machine_memory_bytes, Some(16_384_000 * 1024));
        assert!(h.gpus.is_empty() && h.gpu_note.as_deref().unwrap().contains("NVML"));
        assert!(h.slurm.is_none());
    }

    #[test]
    fn cgroup_v2_quota_and_memory_limit_narrow_the_machine() {
        let h = probe_from(&machine(
            &[
                ("proc/meminfo", MEMINFO),
                ("proc/self/cgroup", "0::/job\n"),
                ("sys/fs/cgroup/job/cpu.max", "250000 100000\n"),
                ("sys/fs/cgroup/job/memory.max", "4294967296\n"),
                ("sys/fs/cgroup/job/memory.current", "1073741824\n"),
            ],
            &[],
            16,
        ));
        assert_eq!((h.cpus, h.cpus_source.as_str()), (3, "cgroup CPU quota"));
        assert_eq!(h.memory_bytes, 3 << 30);
        assert_eq!(h.memory_source, "cgroup memory limit");
        // "max" means no quota.
        let h = probe_from(&machine(
            &[
                ("sys/fs/cgroup/cpu.max", "max 100000\n"),
                ("sys/fs/cgroup/memory.max", "max\n"),
            ],
            &[],
            4,
        ));
        assert_eq!(h.cpus, 4);
        assert_eq!(h.memory_source, "unknown");
    }

    #[test]
    fn cgroup_v1_limits_are_read_and_its_no_limit_value_ignored() {
        let h = probe_from(&machine(
            &[
                ("proc/meminfo", MEMINFO),
                ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "200000\n"),
                ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
            ],
            &[],
            8,
        ));
        assert_eq!(h.cpus, 2);
        assert_eq!(h.memory_source, "MemAvailable");
    }

    #[test]
    fn a_slurm_allocation_caps_cpus_memory_and_gpus() {
        let mut s = machine(
            &[("proc/meminfo", MEMINFO)],
            &[
                ("SLURM_JOB_ID", "4242"),
                ("SLURM_CPUS_PER_TASK", "4"),
                ("SLURM_MEM_PER_CPU", "2000"),
                ("SLURM_GPUS_ON_NODE", "1"),
                ("CUDA_VISIBLE_DEVICES", "1,0"),
            ],
            64,
        );
        s.gpus = Ok(vec![
            gpu("NVIDIA A100-SXM4-80GB", 80, (8, 0), "GPU-aaaa"),
            gpu("NVIDIA A100-SXM4-40GB", 40, (8, 0), "GPU-bbbb"),
        ]);
        let h = probe_from(&s);
        assert_eq!((h.cpus, h.cpus_source.as_str()), (4, "SLURM_CPUS_PER_TASK"));
        assert_eq!(h.memory_bytes, 8000 << 20);
        let a = h.slurm.unwrap();
        assert_eq!((a.job_id.as_deref(), a.gpus), (Some("4242"), Some(1)));
        // CUDA_VISIBLE_DEVICES reorders, Slurm's count truncates, indices restart at 0.
        assert_eq!(h.gpus.len(), 1);
        assert_eq!((h.gpus[0].index, h.gpus[0].uuid.as_str()), (0, "GPU-bbbb"));
    }

    #[test]
    fn cuda_visible_devices_by_uuid_empty_or_invalid() {
        let all = Ok(vec![
            gpu("a", 24, (8, 6), "GPU-1234"),
            gpu("b", 24, (8, 6), "GPU-5678"),
        ]);
        let env = |v: &str| BTreeMap::from([("CUDA_VISIBLE_DEVICES".to_string(), v.to_string())]);
        let names = |v: &str| -> Vec<String> {
            visible_gpus(&all, &env(v), None)
                .0
                .into_iter()
                .map(|g| g.name)
                .collect()
        };
        assert_eq!(names("GPU-56"), ["b"]);
        assert!(names("").is_empty());
        assert!(names("-1").is_empty());
        assert_eq!(names("0,7,1"), ["a"]);
        assert_eq!(gpu_count("a100:2"), 2);
        assert_eq!(gpu_count("0,1,3"), 3);
    }

    #[test]
    fn this_machine_probes_without_failing() {
        let h = probe();
        assert!(h.cpus >= 1);
        assert!(h.memory_bytes > 0, "{h:?}");
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn overflowing_estimates_are_always_refused() {
        let e = ensure_memory("a test", None, "make it smaller").unwrap_err();
        assert!(e.to_string().contains("16.0 EiB"), "{e}");
        assert!(e.to_string().contains("make it smaller"), "{e}");
        ensure_memory("a test", Some(1), "").unwrap();
    }
}
