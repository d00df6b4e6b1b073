//! The integration tests, in one binary: each module covers one stage against real peers and
//! the recorded reference outputs in `tests/fixtures/`.

mod capture;
mod daemon;
mod endpoint;
mod fetch;
mod fixture;
mod mqtt;
mod owl;
mod pixels;
mod rtsp;
mod segment;
mod vision;
