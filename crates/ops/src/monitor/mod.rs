//! Monitoring: has the input drifted ([`drift`]), is the data arriving healthy ([`quality`]),
//! is the model still right now that labels are in ([`decay`]).

pub mod decay;
pub mod drift;
pub mod quality;
