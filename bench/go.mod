module github.com/stratadb/strata/bench

go 1.26.0

replace github.com/stratadb/strata => ../
