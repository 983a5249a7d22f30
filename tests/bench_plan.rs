//! `shoal-bench plan` against a real server: a tiny plan end to end, both
//! servers of a comparison, an objective that cannot be met, and a stall
//! and a dead server reported as findings.

mod common;

use common::*;

include!("common/plan_cases.rs");
