-- Fixtures: 100 customers and 20,000 orders, a few thousand rows a statement.
INSERT INTO customers (id, name, email)
SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 100) g;

INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(1, 2500) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(2501, 5000) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(5001, 7500) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(7501, 10000) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(10001, 12500) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(12501, 15000) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(15001, 17500) g;
INSERT INTO orders (id, customer_id, amount, email)
SELECT g, (g % 100) + 1, (g * 7) % 10000, 'c' || ((g % 100) + 1) || '@example.com' FROM generate_series(17501, 20000) g;
