//! Deduplication: how long and how many `event_id`s are remembered, and
//! whether the memory is shared through Kafka (the follower).

use clap::Args;

use super::{positive, ConfigError};

#[derive(Debug, Args)]
#[command(next_help_heading = "Deduplication")]
pub struct DedupArgs {
    /// How long a published event_id is remembered, in seconds.
    #[arg(long, env = "BRIDGE_DEDUP_TTL_SECS", default_value_t = 8 * 3600)]
    pub dedup_ttl_secs: u64,

    /// Maximum number of event_ids remembered at once.
    #[arg(long, env = "BRIDGE_DEDUP_CAPACITY", default_value_t = 1_000_000)]
    pub dedup_capacity: u64,

    /// Share the dedup memory through Kafka: read every topic the bridge
    /// writes back at start-up (warm start) and while running (follow), so
    /// that every replica knows every id any replica published.
    #[arg(
        long,
        env = "BRIDGE_DEDUP_FOLLOW",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dedup_follow: bool,

    /// Longest the warm start may hold readiness back once Kafka answers,
    /// in seconds; past it the replica becomes ready with what it has read.
    #[arg(
        long,
        env = "BRIDGE_DEDUP_WARM_START_BUDGET_SECS",
        default_value_t = 120
    )]
    pub dedup_warm_start_budget_secs: u64,
}

impl DedupArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("BRIDGE_DEDUP_TTL_SECS", self.dedup_ttl_secs)?;
        positive("BRIDGE_DEDUP_CAPACITY", self.dedup_capacity)?;
        positive(
            "BRIDGE_DEDUP_WARM_START_BUDGET_SECS",
            self.dedup_warm_start_budget_secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_args, validate_args};

    #[test]
    fn dedup_follow_takes_a_boolean_and_the_budget_must_be_positive() {
        for (v, want) in [("false", false), ("0", false), ("true", true), ("on", true)] {
            let cfg = validate_args(&[&format!("--dedup-follow={v}")]).expect("valid");
            assert_eq!(cfg.dedup_follow, want, "{v}");
        }
        assert!(parse_args(&["--brokers", "k:1", "--dedup-follow=maybe"]).is_err());
        let err = validate_args(&["--dedup-warm-start-budget-secs", "0"]).unwrap_err();
        assert_eq!(err.setting, "BRIDGE_DEDUP_WARM_START_BUDGET_SECS");
    }
}
