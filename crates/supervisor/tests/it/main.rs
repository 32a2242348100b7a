//! Integration tests of the supervisor library over real HTTP on 127.0.0.1:0.

mod docs;
mod errors;
mod fake_workers;
mod identity;
mod launch_options;
mod lifecycle;
mod openapi;
mod permissions;
mod registrations;
mod support;
mod ui;
