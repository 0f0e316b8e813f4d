//! A measuring aid: where a device executor's runs spend time on the host. With
//! `KILN_HOST_TIMES=1` an executor times each phase of every run and prints the median a
//! run when it is dropped (the median, so a benchmark's few prompt runs do not weigh on a
//! decode's figures). A decode step on a GPU is a few hundred microseconds of kernels
//! beside a share of host work; a benchmark with every kernel left out
//! (`KILN_CUDA_SKIP_KERNELS=all`) says how large that share is, and this says of what.

use std::time::{Duration, Instant};

pub struct HostTimes {
    label: String,
    phases: &'static [&'static str],
    /// Spans the device timed itself (between events an executor records), a run each.
    device_phases: &'static [&'static str],
    device: Vec<Vec<Duration>>,
    /// Each finished run's phases, the time before it (the caller's) first.
    runs: Vec<Vec<Duration>>,
    current: Vec<Duration>,
    at: Option<Instant>,
}

impl HostTimes {
    /// `phases` name the parts of a run, in the order a run laps them; `device_phases` the
    /// spans the device times (see [`HostTimes::device`]).
    pub fn from_env(
        label: &str,
        phases: &'static [&'static str],
        device_phases: &'static [&'static str],
    ) -> Option<HostTimes> {
        (std::env::var("KILN_HOST_TIMES").as_deref() == Ok("1"))
            .then(|| HostTimes::new(label, phases, device_phases))
    }

    fn new(
        label: &str,
        phases: &'static [&'static str],
        device_phases: &'static [&'static str],
    ) -> HostTimes {
        HostTimes {
            label: label.into(),
            phases,
            device_phases,
            device: Vec::new(),
            runs: Vec::new(),
            current: Vec::new(),
            at: None,
        }
    }

    /// A run starts: the time since the last one ended is the caller's (zero for the first).
    pub fn start(&mut self) {
        let now = Instant::now();
        self.current.clear();
        self.current
            .push(self.at.map_or(Duration::ZERO, |at| now - at));
        self.at = Some(now);
    }

    /// The run's next phase ends now; the last one ends the run.
    pub fn lap(&mut self) {
        let now = Instant::now();
        let Some(at) = self.at.filter(|_| !self.current.is_empty()) else {
            return;
        };
        self.current.push(now - at);
        self.at = Some(now);
        if self.current.len() == self.phases.len() + 1 {
            self.runs.push(std::mem::take(&mut self.current));
        }
    }

    /// One run's spans as the device timed them (`device_phases`, in order): whether the
    /// device's share of a step changed, which the host's wait for it cannot tell apart
    /// from the latency of starting and finishing.
    pub fn device(&mut self, spans: Vec<Duration>) {
        if spans.len() == self.device_phases.len() {
            self.device.push(spans);
        }
    }

    /// The median of each phase a run, in microseconds, named.
    pub fn summary(&self) -> String {
        let names = std::iter::once("before").chain(self.phases.iter().copied());
        let mut s = format!(
            "{}: host time of a run (median of {}), in us: {}",
            self.label,
            self.runs.len(),
            medians(&self.runs, names)
        );
        if !self.device.is_empty() {
            s += &format!(
                "; on the device (median of {}): {}",
                self.device.len(),
                medians(&self.device, self.device_phases.iter().copied())
            );
        }
        s
    }
}

/// `name median` of each column of `runs`, in microseconds.
fn medians<'a>(runs: &[Vec<Duration>], names: impl Iterator<Item = &'a str>) -> String {
    let parts: Vec<String> = names
        .enumerate()
        .map(|(i, name)| {
            let mut v: Vec<Duration> = runs.iter().map(|r| r[i]).collect();
            v.sort();
            let median = v.get(v.len() / 2).copied().unwrap_or_default();
            format!("{name} {:.1}", median.as_secs_f64() * 1e6)
        })
        .collect();
    parts.join(", ")
}

/// [`HostTimes::start`] where an executor keeps times.
pub fn start(times: &mut Option<HostTimes>) {
    if let Some(t) = times {
        t.start();
    }
}

/// [`HostTimes::lap`] where an executor keeps times.
pub fn lap(times: &mut Option<HostTimes>) {
    if let Some(t) = times {
        t.lap();
    }
}

impl Drop for HostTimes {
    fn drop(&mut self) {
        if !self.runs.is_empty() {
            eprintln!("{}", self.summary());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_gets_the_median_of_its_runs() {
        let mut t = HostTimes::new("t", &["a", "b"], &["d"]);
        for ms in [2, 9, 3] {
            t.start();
            std::thread::sleep(Duration::from_millis(ms));
            t.lap();
            t.lap();
            std::thread::sleep(Duration::from_millis(1));
        }
        t.lap(); // outside a run: ignored
        assert_eq!(t.runs.len(), 3);
        for us in [5, 1, 7] {
            t.device(vec![Duration::from_micros(us)]);
        }
        t.device(vec![]); // not a run's spans: ignored
        let a: Vec<Duration> = t.runs.iter().map(|r| r[1]).collect();
        assert!(a[0] >= Duration::from_millis(2) && a[1] >= Duration::from_millis(9));
        assert_eq!(t.runs[0][0], Duration::ZERO);
        assert!(t.runs[1][0] >= Duration::from_millis(1));
        let s = t.summary();
        assert!(
            s.starts_with("t: host time of a run (median of 3), in us: before "),
            "{s}"
        );
        let median_a: f64 = s
            .split(", a ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((3000.0..9000.0).contains(&median_a), "{s}");
        assert!(s.ends_with("; on the device (median of 3): d 5.0"), "{s}");
        t.runs.clear(); // nothing printed when the test drops it
    }
}
