//! The migration engine: the phases shared by the operator and the `run` command.

pub mod plan;
pub mod shape;
pub mod sql;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;
