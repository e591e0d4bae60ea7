-- 10 point selects in one pipeline (pgbench -M prepared -D naccounts=1000000 -f pipeline10.sql).
-- One transaction of this script is 10 queries: queries/s = 10 x tps.
\set aid1 random(1, :naccounts)
\set aid2 random(1, :naccounts)
\set aid3 random(1, :naccounts)
\set aid4 random(1, :naccounts)
\set aid5 random(1, :naccounts)
\set aid6 random(1, :naccounts)
\set aid7 random(1, :naccounts)
\set aid8 random(1, :naccounts)
\set aid9 random(1, :naccounts)
\set aid10 random(1, :naccounts)
\startpipeline
SELECT abalance FROM pgbench_accounts WHERE aid = :aid1;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid2;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid3;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid4;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid5;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid6;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid7;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid8;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid9;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid10;
\endpipeline
