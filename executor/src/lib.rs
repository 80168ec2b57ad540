//! strata-executor
