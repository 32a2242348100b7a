//! The model lifecycle: validating launches ([`plan`]), the table of models ([`table`]) and
//! running launches and terminations on workers ([`launch`]), and sending requests to a
//! model's replicas ([`dispatch`]).

pub mod dispatch;
pub mod launch;
pub mod plan;
pub mod table;

pub use plan::plan_launch;
pub use table::{ModelEntry, ModelTable};
