module baton/bench/loadgen

go 1.19
