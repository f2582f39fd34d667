//! Instance types as CPU and memory limits: what `INSTANCE_TYPE` means for a local container,
//! so an analysis that needs more than its type has is killed locally as on EC2.

/// The resources of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
}

/// EC2's figures for the types analyses use most.
const KNOWN: &[(&str, u32, u64, u32)] = &[
    ("t2.nano", 1, 512, 0),
    ("t2.micro", 1, 1024, 0),
    ("t2.small", 1, 2048, 0),
    ("t2.medium", 2, 4096, 0),
    ("t2.large", 2, 8192, 0),
    ("t2.xlarge", 4, 16384, 0),
    ("t3.micro", 2, 1024, 0),
    ("t3.small", 2, 2048, 0),
    ("t3.medium", 2, 4096, 0),
    ("m5.large", 2, 8192, 0),
    ("m5.xlarge", 4, 16384, 0),
    ("c5.large", 2, 4096, 0),
    ("c5.xlarge", 4, 8192, 0),
    ("p2.xlarge", 4, 62464, 1),
    ("p3.2xlarge", 8, 62464, 1),
    ("g4dn.xlarge", 4, 16384, 1),
    ("g5.xlarge", 4, 16384, 1),
];

impl Hardware {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX)
    }

    /// The CPU limit in billionths of a CPU, never above this machine's CPUs (engines refuse more).
    pub fn nano_cpus(&self) -> i64 {
        let host = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
        i64::from(self.vcpus).min(host) * 1_000_000_000
    }

    /// `1 vCPU, 1 GiB` (and the GPUs), for messages.
    pub fn describe(&self) -> String {
        let mem = if self.memory_mib.is_multiple_of(1024) {
            format!("{} GiB", self.memory_mib / 1024)
        } else {
            format!("{} MiB", self.memory_mib)
        };
        let gpus = if self.gpus > 0 { format!(", {} GPU", self.gpus) } else { String::new() };
        format!("{} vCPU, {mem}{gpus}", self.vcpus)
    }
}

/// The resources of `instance_type`: EC2's figures where known, else the usual scale of its size
/// (`large` 2 vCPU and 8 GiB, each `xlarge` step doubling both); GPU families (`p`, `g`) get one.
pub fn of(instance_type: &str) -> Hardware {
    if let Some((_, vcpus, memory_mib, gpus)) = KNOWN.iter().find(|(t, ..)| *t == instance_type) {
        return Hardware { vcpus: *vcpus, memory_mib: *memory_mib, gpus: *gpus };
    }
    let (family, size) = instance_type.split_once('.').unwrap_or((instance_type, "large"));
    let (vcpus, memory_mib) = match size {
        "nano" => (1, 512),
        "micro" => (1, 1024),
        "small" => (1, 2048),
        "medium" => (2, 4096),
        "large" => (2, 8192),
        "xlarge" => (4, 16384),
        s => match s.strip_suffix("xlarge").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => (4 * n.min(64), 16384 * u64::from(n.min(64))),
            None => (2, 8192),
        },
    };
    let gpus = u32::from(family.starts_with('p') || family.starts_with('g'));
    Hardware { vcpus, memory_mib, gpus }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_become_limits() {
        assert_eq!(of("t2.micro"), Hardware { vcpus: 1, memory_mib: 1024, gpus: 0 });
        assert_eq!(of("t2.micro").memory_bytes(), 1 << 30);
        assert_eq!(of("r5.2xlarge"), Hardware { vcpus: 8, memory_mib: 32768, gpus: 0 });
        assert_eq!(of("p3.2xlarge").gpus, 1);
        assert_eq!(of("t2.micro").describe(), "1 vCPU, 1 GiB");
        assert!(of("m5.24xlarge").nano_cpus() >= 1_000_000_000);
    }
}
