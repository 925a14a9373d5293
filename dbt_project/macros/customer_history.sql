{#- Every accepted customer record of every load, incremental: a load is added once. The staging
    model holds only the latest load; training needs every customer whose outcome is known. Used by
    each use case's int_<use case>__customer_history model. -#}
{% macro customer_history(staging_model) %}
select *
from {{ staging_model }}
{% if is_incremental() %}
where load_id not in (select distinct load_id from {{ this }})
{% endif %}
{% endmacro %}
