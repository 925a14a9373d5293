{{ config(alias='stg_outcomes') }}

{{ latest_outcomes(
    source('caravan', 'raw_outcomes'),
    'purchased_caravan_policy',
    "case Purchase when 'Yes' then 1 when 'No' then 0 end"
) }}
