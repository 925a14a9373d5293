{{ config(alias='stg_customers') }}

-- The dictionary tests on this model (tests/generic/dictionary_rules.sql) read these seeds; as parents
-- they are built with it, also when only this model and its upstream are selected.
-- depends_on: {{ ref('swiss_bank_data_dictionary') }}

-- One row per usable customer of the latest load, typed (flags as 0/1), with the age band used by
-- the fairness check. Rows quarantined at ingestion are left out.

with source as (

    select * from {{ source('swiss_bank', 'raw_customers') }}
    where _quarantine_reason is null

)

select
    cast(customer_id as varchar) as customer_id,
    cast(age as integer) as age,
    case
        when cast(age as integer) < 30 then '18-29'
        when cast(age as integer) < 45 then '30-44'
        when cast(age as integer) < 60 then '45-59'
        else '60+'
    end as age_band,
    cast(settlement as varchar) as settlement,
    cast(canton as varchar) as canton,
    cast(relationship_years as integer) as relationship_years,
    cast(products_held as integer) as products_held,
    cast(balance_chf as double) as balance_chf,
    cast(digital_logins_per_month as integer) as digital_logins_per_month,
    cast(cast(has_mortgage as boolean) as integer) as has_mortgage,
    cast(cast(has_investment_account as boolean) as integer) as has_investment_account,
    cast(cast(salary_account as boolean) as integer) as salary_account,
    cast(interest_rate as double) as interest_rate,
    cast(unemployment_rate as double) as unemployment_rate,
    cast(consumer_confidence as double) as consumer_confidence,
    cast(contact_month as integer) as contact_month,
    cast(contact_weekday as integer) as contact_weekday,
    cast(cast(bought_product_a as boolean) as integer) as bought_product_a,
    _outlier_columns as outlier_columns,
    _load_id as load_id,
    _loaded_at as loaded_at

from source
