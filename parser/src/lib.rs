//! strata-parser
