//! Which `cuda:sm_NN` variant a device runs: pure logic, tested without a GPU.
//!
//! PTX for capability X runs on any device of capability >= X (the driver compiles it for
//! the device), except arch-specific targets (`sm_90a`), whose instructions exist on
//! exactly that capability. Among runnable variants the newest capability wins, and an
//! arch-specific one beats its plain twin.

use crate::cpu::features::Rank;

/// A device's compute capability, `(major, minor)`.
pub type Capability = (u32, u32);

/// `sm_90a` -> `((9, 0), true)`; `sm_120` -> `((12, 0), false)`.
pub fn parse(arch: &str) -> Result<(Capability, bool), String> {
    let bad = || format!("`{arch}` is not a CUDA capability (sm_<major><minor>[a])");
    let digits = arch.strip_prefix("sm_").ok_or_else(bad)?;
    let (digits, specific) = match digits.strip_suffix('a') {
        Some(d) => (d, true),
        None => (digits, false),
    };
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    let major = major.parse().map_err(|_| bad())?;
    let minor = minor.parse().map_err(|_| bad())?;
    Ok(((major, minor), specific))
}

/// Whether a device of capability `device` runs `arch`'s PTX: its rank, or why not.
pub fn support(arch: &str, device: Capability, device_name: &str) -> Result<Rank, String> {
    let (cap, specific) = parse(arch)?;
    let runs = if specific {
        cap == device
    } else {
        cap <= device
    };
    if !runs {
        let need = if specific { "exactly" } else { "at least" };
        return Err(format!(
            "needs a GPU of capability {need} {}.{}; this one ({device_name}) is {}.{}",
            cap.0, cap.1, device.0, device.1
        ));
    }
    Ok(Rank {
        // Any GPU variant the device runs beats every CPU variant (levels 1..=4).
        level: 100,
        extra: ((cap.0 * 10 + cap.1) * 2 + specific as u32) as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capabilities() {
        assert_eq!(parse("sm_90a"), Ok(((9, 0), true)));
        assert_eq!(parse("sm_86"), Ok(((8, 6), false)));
        assert_eq!(parse("sm_120"), Ok(((12, 0), false)));
        for bad in ["sm_", "sm_9", "90", "sm_9x", "sm_a"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn newer_plain_capabilities_run_older_ptx() {
        let h100 = (9, 0);
        assert!(support("sm_80", h100, "H100").is_ok());
        assert!(support("sm_90", h100, "H100").is_ok());
        assert!(support("sm_90a", h100, "H100").is_ok());
        let e = support("sm_100", h100, "H100").unwrap_err();
        assert!(e.contains("at least 10.0") && e.contains("H100"), "{e}");
        // Arch-specific code runs on its own capability only.
        let e = support("sm_90a", (10, 0), "B200").unwrap_err();
        assert!(e.contains("exactly 9.0"), "{e}");
    }

    #[test]
    fn the_closest_capability_wins() {
        let h100 = (9, 0);
        let r = |a: &str| support(a, h100, "H100").unwrap();
        assert!(r("sm_90a") > r("sm_90"));
        assert!(r("sm_90") > r("sm_80"));
        assert!(r("sm_70").level > 4, "beats every CPU level");
    }
}
