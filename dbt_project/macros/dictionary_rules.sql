{#- Helpers of the dictionary tests (tests/generic/dictionary_rules.sql). -#}

{#- The columns of a relation and their DuckDB types. -#}
{% macro dictionary_rules_model_columns(model) -%}
    select column_name, data_type from information_schema.columns
    where table_schema = '{{ model.schema }}' and table_name = '{{ model.identifier }}'
{%- endmacro %}


{#- Every cell of the dictionary's feature columns, as text: one scan for all columns. -#}
{% macro dictionary_rules_cells(model, id_column) -%}
    select * from (
        select {{ id_column }} as _id, columns(* exclude ({{ id_column }}))::varchar
        from {{ model }}
    ) unpivot include nulls (value for column_name in (columns(* exclude (_id))))
{%- endmacro %}
