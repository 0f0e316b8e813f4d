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
}
