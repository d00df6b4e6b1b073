//! The integration tests, in one binary: each module covers one stage against real peers and
//! the recorded reference outputs in `tests/fixtures/`.

mod capture;
mod check;
mod daemon;
mod decisions;
mod disk;
mod docs;
mod endpoint;
mod examples;
mod fetch;
mod fixture;
mod gpu;
mod history;
mod http_limits;
mod https;
mod learning;
mod metrics;
mod mqtt;
mod mqtt_delivery;
mod mqtt_hostile;
mod owl;
mod pixels;
mod redirect;
mod rtsp;
mod runtime;
mod segment;
mod signals;
mod spawn;
mod tree;
mod vision;
mod web;
mod webdriver;
mod workers;
