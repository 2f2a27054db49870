{#
  One row: how current the warehouse is (the replication checkpoint). Every mart reads its
  `current_as_of` into a `data_as_of` column, in the same statement as its data, so a mart
  row says which moment of the shop it describes.

  It is also the marts' gate: it depends on every source below, so `dbt build` runs every
  data test on the sources before any mart, and skips the marts when one fails. Corrupted
  data never reaches them; they keep their last good build. A new source belongs here too.
#}
{{ config(materialized='view') }}

-- depends_on: {{ source('replica', 'stores') }}, {{ source('replica', 'employees') }}
-- depends_on: {{ source('replica', 'customers') }}, {{ source('replica', 'products') }}
-- depends_on: {{ source('replica', 'orders') }}, {{ source('replica', 'order_items') }}
-- depends_on: {{ source('replica', 'payments') }}, {{ source('replica', 'inventory_movements') }}
-- depends_on: {{ source('star', 'dim_date') }}, {{ source('star', 'dim_store') }}
-- depends_on: {{ source('star', 'dim_employee') }}, {{ source('star', 'dim_customer') }}
-- depends_on: {{ source('star', 'dim_product') }}, {{ source('star', 'fact_sales') }}
-- depends_on: {{ source('star', 'fact_payments') }}, {{ source('star', 'fact_inventory') }}
-- depends_on: {{ source('pipeline', 'cdc_events') }}, {{ source('pipeline', 'cdc_dead_letters') }}
-- depends_on: {{ source('star', 'fact_impressions') }}, {{ source('star', 'fact_clicks') }}
-- depends_on: {{ source('star', 'fact_attribution') }}

select
    slot_name,
    lsn::text as lsn,
    commit_ts as current_as_of,
    updated_at as applied_at
from {{ source('pipeline', 'replication_checkpoint') }}
where slot_name = '{{ var("brewlytics_slot", env_var("SLOT_NAME", "brewlytics")) }}'
