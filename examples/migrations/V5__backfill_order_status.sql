-- Every existing order is new until the billing job says otherwise.
UPDATE orders SET status = 'new' WHERE status IS NULL;
