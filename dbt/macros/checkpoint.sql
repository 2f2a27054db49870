{#
  The source commit time of the last transaction the replicator applied to coffee_olap for
  the slot `brewlytics_slot` (var; default SLOT_NAME, else brewlytics). Every replica and
  star table is written in the same OLAP transaction as this checkpoint, so each is exactly
  as current as this timestamp. The replicator's heartbeats (a logical message through the
  source every second) advance it while the shop is idle; it stops when the replicator, the
  slot or OLAP stops. No row (the replicator never ran) gives null, which dbt reports as
  stale.
#}
{% macro brewlytics_checkpoint_loaded_at() %}
select commit_ts from {{ source('pipeline', 'replication_checkpoint') }}
where slot_name = '{{ var("brewlytics_slot", env_var("SLOT_NAME", "brewlytics")) }}'
{% endmacro %}
