//! placeholder
pub struct Linear; pub struct Mlp;
