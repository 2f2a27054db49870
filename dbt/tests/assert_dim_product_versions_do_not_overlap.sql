-- SCD type 2: no two versions of a product are valid at the same instant, and no version
-- is empty (valid_from < valid_to). Returns the offending pairs.
select
    a.product_id,
    a.product_key,
    a.valid_from,
    a.valid_to,
    b.product_key as overlapping_product_key,
    b.valid_from as overlapping_valid_from,
    b.valid_to as overlapping_valid_to
from {{ source('star', 'dim_product') }} a
join {{ source('star', 'dim_product') }} b
  on b.product_id = a.product_id
 and b.product_key <> a.product_key
 and a.valid_from < b.valid_to
 and b.valid_from < a.valid_to
where a.product_key < b.product_key

union all

select product_id, product_key, valid_from, valid_to, null, null, null
from {{ source('star', 'dim_product') }}
where not (valid_from < valid_to)
