{#- Each use case builds into the schema named after its folder, so no use case needs a block in
    dbt_project.yml: models in models/<layer>/<use case>/ (fqn: project, layer, use case, ..., name),
    seeds in seeds/<use case>/ (fqn: project, use case, name). A schema configured explicitly is used
    as-is (dbt's default would prefix it with the target schema). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is not none -%}
        {{ custom_schema_name }}
    {%- elif node.resource_type == 'seed' and node.fqn | length > 2 -%}
        {{ node.fqn[1] }}
    {%- elif node.resource_type in ('model', 'snapshot') and node.fqn | length > 3 -%}
        {{ node.fqn[2] }}
    {%- else -%}
        {{ target.schema }}
    {%- endif -%}
{%- endmacro %}
