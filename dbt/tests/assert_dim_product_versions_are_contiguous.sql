-- SCD type 2: a product's versions follow each other without a gap: each version ends
-- exactly where the next one starts (the source commit time of the change). With
-- assert_dim_product_versions_do_not_overlap, every instant has exactly one version.
select product_id, product_key, valid_to, next_product_key, next_valid_from
from (
    select
        product_id,
        product_key,
        valid_to,
        lead(product_key) over w as next_product_key,
        lead(valid_from) over w as next_valid_from
    from {{ source('star', 'dim_product') }}
    window w as (partition by product_id order by valid_from)
) v
where next_product_key is not null
  and valid_to <> next_valid_from
