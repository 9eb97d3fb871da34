//! The agent on real containers (Podman) and real BPF programs: what each sensor records, start-up state, budgets and gaps, hostile containers, exec end to end.
//!
//! One test binary per area (linked once); one module per subject.

mod agent_budget;
mod agent_gaps;
mod agent_start_state;
mod exec_end_to_end;
mod file_sensor;
mod hostile_containers;
mod network_sensor;
mod sample_sensors;
