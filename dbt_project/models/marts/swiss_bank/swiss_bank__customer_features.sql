{{ config(alias='customer_features') }}

-- One row per customer ever accepted, from their latest record, with the model inputs, the age
-- band (for fairness) and the target (latest reported outcome, else the export's value).

with latest_records as (

    select * from {{ ref('int_swiss_bank__latest_records') }}

),

outcomes as (

    select * from {{ ref('stg_swiss_bank__outcomes') }}

)

select
    latest_records.* exclude (bought_product_a, load_id, loaded_at, outlier_columns),
    latest_records.balance_chf / latest_records.products_held as balance_per_product,
    coalesce(outcomes.bought_product_a, latest_records.bought_product_a) as bought_product_a,
    latest_records.load_id,
    latest_records.loaded_at

from latest_records
left join outcomes using (customer_id)
