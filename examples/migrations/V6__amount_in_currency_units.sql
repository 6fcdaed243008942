-- Cents as integers become currency amounts with two decimals.
ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2) USING amount / 100.0;
