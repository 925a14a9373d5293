{{ config(alias='int_latest_records') }}

-- Each customer's latest record; what the feature mart is built from.
{{ latest_records(ref('int_swiss_bank__customer_history')) }}
