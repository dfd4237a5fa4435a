//! Python packages for images, without pip: find the interpreter inside an image, resolve
//! requirements for it with `uv`, download and hash-check the wheels, and install them —
//! as a wheel installer does — into a new, deterministic image layer.

pub mod fetch;
pub mod interpreter;
pub mod resolve;
pub mod uv;
pub mod wheel;

pub use interpreter::PythonTarget;
pub use resolve::resolve;
pub use wheel::LockedWheel;
