{{ config(alias='stg_outcomes') }}

{{ latest_outcomes(
    source('swiss_bank', 'raw_outcomes'),
    'bought_product_a',
    "cast(cast(bought_product_a as boolean) as integer)"
) }}
