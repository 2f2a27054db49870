//! `brewlytics_star_degraded_inputs{star_table, attribute}`: 1 for each star column whose
//! source no longer feeds every row (a dropped or incompatible column, a frozen, dropped or
//! unpublished table), 0 for the others. Every series exists from the replicator's first
//! batch (when it has read the star's inputs); labels come from the star's fixed columns.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Degraded;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StarLabels {
    star_table: String,
    attribute: String,
}

/// What the replicator read of the star's inputs (after a batch that changed them, or now and
/// then).
#[derive(Clone, Debug, Default)]
pub struct StarReading {
    /// Every (star table, attribute) an input feeds.
    pub feeds: Vec<(String, String)>,
    pub degraded: Vec<Degraded>,
}

pub struct StarMetrics {
    degraded: Family<StarLabels, Gauge<i64, AtomicI64>>,
}

impl StarMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let degraded = Family::<StarLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "brewlytics_star_degraded_inputs",
            "1 while a star column's source no longer feeds every row (a source column dropped or of a type the star cannot hold, its table frozen, dropped or unpublished)",
            degraded.clone(),
        );
        Self { degraded }
    }

    pub fn set(&self, reading: &StarReading) {
        for (star_table, attribute) in &reading.feeds {
            let on = reading
                .degraded
                .iter()
                .any(|d| &d.star_table == star_table && &d.attribute == attribute);
            self.degraded
                .get_or_create(&StarLabels {
                    star_table: star_table.clone(),
                    attribute: attribute.clone(),
                })
                .set(on as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feed_is_exported_and_the_degraded_ones_are_1() {
        let mut registry = Registry::default();
        let m = StarMetrics::register(&mut registry);
        m.set(&StarReading {
            feeds: vec![
                ("dim_customer".into(), "email".into()),
                ("fact_sales".into(), "quantity".into()),
            ],
            degraded: vec![Degraded {
                star_table: "dim_customer".into(),
                attribute: "email".into(),
                source: "public.customers.email".into(),
                state: "dropped".into(),
                lsn: None,
                at: None,
                message: String::new(),
            }],
        });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "brewlytics_star_degraded_inputs{star_table=\"dim_customer\",attribute=\"email\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "brewlytics_star_degraded_inputs{star_table=\"fact_sales\",attribute=\"quantity\"} 0"
            ),
            "{text}"
        );
    }
}
