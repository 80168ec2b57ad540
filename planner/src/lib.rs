//! strata-planner
