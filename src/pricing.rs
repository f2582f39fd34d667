//! What the development loop costs: a dated price table and the arithmetic on it.
//!
//! EC2 bills a running instance by the second at its type's hourly on-demand price, a stopped
//! instance only for its EBS volume, and a saved image for its snapshots. [`PRICES`] holds the
//! on-demand Linux prices of common instance types in us-east-1 as AWS published them on
//! [`PRICES_DATE`] ([`PRICES_SOURCE`]); other regions cost up to about 30% more. A type missing
//! from the table has no price (shown as `-`, never guessed). `DEVAMI_PRICES` may name a JSON file
//! `{"m5.large": 0.096, ...}` (dollars per hour) that overrides or extends the table, for other
//! regions, newer types or negotiated rates. The local backend's instances are free; its figures
//! are what the same loop would cost on AWS, labelled as such by the caller.

use std::collections::BTreeMap;

/// When the table's prices were published.
pub const PRICES_DATE: &str = "2024-06";
/// Where they come from.
pub const PRICES_SOURCE: &str =
    "AWS EC2 on-demand pricing, us-east-1, Linux (https://aws.amazon.com/ec2/pricing/on-demand/)";

/// Dollars per hour, by instance type.
pub const PRICES: &[(&str, f64)] = &[
    ("t2.micro", 0.0116),
    ("t2.small", 0.023),
    ("t2.medium", 0.0464),
    ("t2.large", 0.0928),
    ("t2.xlarge", 0.1856),
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m5.4xlarge", 0.768),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("c5.4xlarge", 0.68),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("p2.xlarge", 0.9),
    ("p3.2xlarge", 3.06),
    ("g4dn.xlarge", 0.526),
    ("g4dn.2xlarge", 0.752),
    ("g5.xlarge", 1.006),
];

/// EBS gp2/gp3 volume storage, dollars per GiB-month (gp2; gp3 is $0.08).
pub const VOLUME_GIB_MONTH: f64 = 0.10;
/// EBS snapshot storage (standard tier), dollars per GiB-month.
pub const SNAPSHOT_GIB_MONTH: f64 = 0.05;
/// Hours in the month AWS bills storage by.
const HOURS_PER_MONTH: f64 = 730.0;

/// The price table in effect: [`PRICES`] with the overrides of `DEVAMI_PRICES`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    hourly: BTreeMap<String, f64>,
    /// The overrides file, when one was read.
    pub overrides: Option<String>,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> PriceTable {
        PriceTable { hourly: PRICES.iter().map(|(t, p)| (t.to_string(), *p)).collect(), overrides: None }
    }

    /// The built-in table with `DEVAMI_PRICES` applied; a bad file is an error naming it.
    pub fn from_env() -> Result<PriceTable, String> {
        let mut table = PriceTable::builtin();
        if let Some(path) = std::env::var_os("DEVAMI_PRICES").filter(|p| !p.is_empty()) {
            let shown = std::path::Path::new(&path).display().to_string();
            let text = crate::regular::read_text(std::path::Path::new(&path))
                .map_err(|e| format!("DEVAMI_PRICES `{shown}`: {e}"))?;
            table.apply(&text).map_err(|e| format!("DEVAMI_PRICES `{shown}`: {e}"))?;
            table.overrides = Some(shown);
        }
        Ok(table)
    }

    /// Applies `{"type": dollars_per_hour, ...}`.
    pub fn apply(&mut self, text: &str) -> Result<(), String> {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let obj = doc.as_object().ok_or("expected an object like {\"m5.large\": 0.096}")?;
        for (ty, v) in obj {
            let price = v.as_f64().filter(|p| p.is_finite() && *p >= 0.0).ok_or_else(|| {
                format!(
                    "{}: expected dollars per hour (a number of at least 0), found {}",
                    crate::error::shown(ty),
                    crate::error::clipped(&v.to_string(), 60)
                )
            })?;
            self.hourly.insert(ty.clone(), price);
        }
        Ok(())
    }

    /// Dollars per hour of an instance type, when known.
    pub fn hourly(&self, instance_type: &str) -> Option<f64> {
        self.hourly.get(instance_type).copied()
    }
}

/// Dollars for `seconds` of an instance at `hourly` dollars per hour.
pub fn running_cost(hourly: f64, seconds: i64) -> f64 {
    hourly * seconds.max(0) as f64 / 3600.0
}

/// Dollars per month of `gib` GiB of EBS volume.
pub fn volume_month(gib: f64) -> f64 {
    gib.max(0.0) * VOLUME_GIB_MONTH
}

/// Dollars per month of `bytes` of snapshot storage (EBS bills snapshots by the data they hold).
pub fn snapshot_month(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 * SNAPSHOT_GIB_MONTH
}

/// Dollars per hour of a monthly figure.
pub fn per_hour(month: f64) -> f64 {
    month / HOURS_PER_MONTH
}

/// Dollars as shown: four decimals below ten cents (`$0.0116`, hourly prices), else cents.
pub fn dollars(amount: f64) -> String {
    if amount != 0.0 && amount.abs() < 0.1 { format!("${amount:.4}") } else { format!("${amount:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn known_prices_and_arithmetic() {
        let t = PriceTable::builtin();
        assert_eq!(t.hourly("t2.micro"), Some(0.0116));
        assert_eq!(t.hourly("x9.nothing"), None);
        assert!(close(running_cost(0.096, 5400), 0.144));
        assert_eq!(running_cost(1.0, -5), 0.0);
        assert!(close(volume_month(8.0), 0.8));
        assert!(close(snapshot_month(2 << 30), 0.1));
        assert!(close(per_hour(7.3), 0.01));
        assert_eq!(dollars(0.144), "$0.14");
        assert_eq!(dollars(0.0), "$0.00");
        assert_eq!(dollars(12.5), "$12.50");
    }

    /// The figures `status` shows in the integration tests (`DEVAMI_PRICES`, a moved clock).
    #[test]
    fn the_figures_of_the_status_table() {
        assert!(close(running_cost(1.0, 1800), 0.5));
        assert_eq!(dollars(running_cost(1.0, 1800)), "$0.50");
        assert!(close(running_cost(0.25, 7200), 0.5));
        assert_eq!(dollars(running_cost(2.0, 900)), "$0.50");
        assert_eq!(dollars(1.0), "$1.00");
        // An hour of a t2.micro, and a month of an 8 GiB volume spread over its hours.
        assert!(close(running_cost(0.0116, 3600), 0.0116));
        assert!(close(per_hour(volume_month(8.0)), 0.8 / 730.0));
        assert_eq!(snapshot_month(0), 0.0);
        assert!(close(snapshot_month(1 << 30), SNAPSHOT_GIB_MONTH));
    }

    #[test]
    fn amounts_below_ten_cents_keep_four_digits_and_the_rest_round_to_cents() {
        assert_eq!(dollars(0.005), "$0.0050");
        assert_eq!(dollars(0.0999), "$0.0999");
        assert_eq!(dollars(0.1), "$0.10");
        assert_eq!(dollars(0.00001), "$0.0000");
        assert_eq!(dollars(0.499), "$0.50");
        assert_eq!(dollars(0.5049), "$0.50");
        assert_eq!(dollars(1234.5), "$1234.50");
    }

    /// Hourly prices of the small types differ in their third and fourth digits: shown as cents,
    /// a t2.micro ($0.0116) and a t3.micro ($0.0104) would both read `$0.01`, and `status` would
    /// understate the first by 14%.
    #[test]
    fn hourly_prices_of_small_types_keep_their_digits() {
        assert_eq!(dollars(0.0116), "$0.0116");
        assert_eq!(dollars(0.0104), "$0.0104");
        assert_ne!(dollars(0.0116), dollars(0.0104));
    }

    #[test]
    fn overrides_extend_and_replace_and_bad_ones_are_named() {
        let mut t = PriceTable::builtin();
        t.apply(r#"{"t2.micro": 0.02, "z1d.large": 0.186}"#).unwrap();
        assert_eq!(t.hourly("t2.micro"), Some(0.02));
        assert_eq!(t.hourly("z1d.large"), Some(0.186));
        assert_eq!(t.hourly("m5.large"), Some(0.096), "an override dropped the rest of the table");
        assert_eq!(t.overrides, None, "`apply` alone does not name a file");
        t.apply(r#"{"t2.micro": 0}"#).unwrap();
        assert_eq!(t.hourly("t2.micro"), Some(0.0), "a free type (negotiated, or a credit) is allowed");
        assert!(t.apply("[1]").unwrap_err().contains("expected an object"));
        assert!(t.apply(r#"{"a": "cheap"}"#).unwrap_err().contains("`a`"));
        assert!(t.apply(r#"{"a": -1}"#).is_err());
        assert!(t.apply("{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn the_table_has_no_duplicates_and_sane_prices() {
        let mut seen = std::collections::HashSet::new();
        for (t, p) in PRICES {
            assert!(seen.insert(t), "{t} twice");
            assert!(*p > 0.0 && *p < 100.0, "{t}: {p}");
        }
    }

    /// Within the general-purpose and compute families each size costs twice the one below (to
    /// AWS's rounding), which catches a mistyped digit.
    #[test]
    fn each_size_costs_about_twice_the_one_below() {
        let t = PriceTable::builtin();
        let families: &[&[&str]] = &[
            &["t2.micro", "t2.small", "t2.medium", "t2.large", "t2.xlarge"],
            &["t3.micro", "t3.small", "t3.medium", "t3.large", "t3.xlarge"],
            &["m5.large", "m5.xlarge", "m5.2xlarge", "m5.4xlarge"],
            &["c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge"],
            &["r5.large", "r5.xlarge"],
        ];
        for family in families {
            for pair in family.windows(2) {
                let (small, big) = (t.hourly(pair[0]).unwrap(), t.hourly(pair[1]).unwrap());
                let ratio = big / small;
                assert!((1.97..=2.03).contains(&ratio), "{} -> {}: x{ratio:.3}", pair[0], pair[1]);
            }
        }
    }
}
