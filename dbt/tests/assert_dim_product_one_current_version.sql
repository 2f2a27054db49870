-- SCD type 2: each product has exactly one current version, and it is its latest version,
-- open-ended (valid_to = infinity). Returns the products where that does not hold.
select
    product_id,
    count(*) filter (where is_current) as current_versions,
    max(valid_from) as latest_valid_from,
    max(valid_from) filter (where is_current) as current_valid_from,
    max(valid_to) filter (where is_current) as current_valid_to
from {{ source('star', 'dim_product') }}
group by product_id
having count(*) filter (where is_current) <> 1
    or max(valid_from) filter (where is_current) is distinct from max(valid_from)
    or max(valid_to) filter (where is_current) <> 'infinity'::timestamptz
