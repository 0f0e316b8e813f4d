//! What the session needs of an executor on a device with its own memory (the CUDA, HIP
//! and Vulkan executors): inputs go up, the plan runs, outputs come down, carried inputs
//! stay (see `crate::carry`). The CPU executor reads and writes host memory in place and
//! is not one of them.

use crate::cpu::executor::LaunchTiming;
use crate::error::RuntimeError;
use crate::plan::{HostIo, Plan};
use kiln_ir::Bindings;

pub trait DeviceExecutor: std::fmt::Debug {
    /// The device's name, for messages.
    fn device_name(&self) -> &str;

    /// Runs `plan` under `env` on `io`; with `profile`, times each launch on the device.
    fn execute(
        &mut self,
        plan: &Plan,
        env: &Bindings,
        io: HostIo<'_>,
        profile: bool,
    ) -> Result<Vec<LaunchTiming>, RuntimeError>;

    /// For executors that keep a run's launches recorded (a CUDA graph, a Vulkan command
    /// buffer): how many runs there were and how many of them recorded anew.
    fn recordings(&self) -> Option<Recordings> {
        None
    }
}

/// Runs of an executor that replays recorded launches, and how many had to record them
/// anew (the rest replayed, perhaps with new values in place).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recordings {
    pub runs: u64,
    pub recorded: u64,
}
