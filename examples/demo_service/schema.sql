-- The `warehouse` database of the business templates (product-import, listing-creation, inventory-sync,
-- order-processing). Runs as is on SQLite and PostgreSQL:
--   sqlite3 .data/warehouse.db < examples/demo_service/schema.sql
--   psql postgresql://postgres@127.0.0.1:5432/shop -f examples/demo_service/schema.sql

create table if not exists products (
    sku         varchar(64) primary key,
    title       text not null,
    category    text,
    cost_price  double precision not null,
    price       double precision not null,
    stock       integer not null default 0,
    image_url   text,
    tags        text,
    listing_id  varchar(64),
    listed_at   text,
    updated_at  text
);

create table if not exists orders (
    order_id     varchar(64) primary key,
    sku          varchar(64) not null,
    quantity     integer not null,
    total        double precision not null,
    customer     text,
    status       text not null,
    approved_by  text,
    tracking     text,
    received_at  text
);
