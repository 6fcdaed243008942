-- The shop's first tables, as the team wrote them.
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text
);

CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount integer NOT NULL,
    email text,
    status text,
    legacy_code text
);
