//! The model lifecycle's parts: validating launches ([`plan`]), the table of models
//! ([`table`]), what a launch sends to workers ([`spec`]) and sending a request to one of a
//! model's replicas ([`dispatch`]). Running launches and terminations is the
//! `domain::Cluster`'s job; nothing here sees HTTP or knows the cluster's members.

pub mod dispatch;
pub mod plan;
pub mod spec;
pub mod table;

pub use plan::{plan_launch, LaunchPlan};
pub use table::{ModelEntry, ModelTable};
