-- The type 1 dimensions and the current product versions equal the replica: every source row
-- has its member with the same attributes (not inferred, not deleted), and a member whose
-- source row is gone is marked deleted. Returns the members that differ.
select 'dim_store' as dimension, coalesce(r.id, d.store_id) as source_id
from {{ source('replica', 'stores') }} r
full join {{ source('star', 'dim_store') }} d on d.store_id = r.id
where (r.id is null and not d.is_deleted)
   or (r.id is not null and (
        d.store_id is null
        or (r.name, r.city, r.opened_on, false, false)
           is distinct from (d.name, d.city, d.opened_on, d.is_inferred, d.is_deleted)))

union all

select 'dim_employee', coalesce(r.id, d.employee_id)
from {{ source('replica', 'employees') }} r
full join {{ source('star', 'dim_employee') }} d on d.employee_id = r.id
where (r.id is null and not d.is_deleted)
   or (r.id is not null and (
        d.employee_id is null
        or (r.name, r.role, r.store_id, r.active, r.hired_on, false, false)
           is distinct from (d.name, d.role, d.store_id, d.active, d.hired_on, d.is_inferred, d.is_deleted)))

union all

select 'dim_customer', coalesce(r.id, d.customer_id)
from {{ source('replica', 'customers') }} r
full join (
    select * from {{ source('star', 'dim_customer') }} where customer_id is not null
) d on d.customer_id = r.id
where (r.id is null and not d.is_deleted)
   or (r.id is not null and (
        d.customer_id is null
        or (r.name, r.email, r.created_at, false, false)
           is distinct from (d.name, d.email, d.created_at, d.is_inferred, d.is_deleted)))

union all

select 'dim_product (current version)', coalesce(r.id, d.product_id)
from {{ source('replica', 'products') }} r
full join (
    select * from {{ source('star', 'dim_product') }} where is_current
) d on d.product_id = r.id
where (r.id is null and not d.is_deleted)
   or (r.id is not null and (
        d.product_id is null
        or (r.name, r.category, r.price, r.is_available, false, false)
           is distinct from (d.name, d.category, d.price, d.is_available, d.is_inferred, d.is_deleted)))
