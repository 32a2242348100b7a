//! End-to-end tests: the real `xinference-local` binary on 127.0.0.1:0 (and the `xinference`
//! CLI against it).

mod audio;
mod choices;
mod cli;
mod cluster;
mod deploy;
mod gpu;
mod hub;
mod identity;
mod identity_faults;
mod llm;
mod local;
mod logprobs;
mod models;
mod reasoning;
mod slow_clients;
mod sso;
mod structured;
mod support;
mod templates;
mod tools;
