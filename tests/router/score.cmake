# router/ complexity score: features, weights JSON, training and evaluation (test_score), and
# the `wye route` command driven through the built binary (test_score_cli).
wye_test(test_score test_score.c wye_router)
wye_test(test_score_cli test_score_cli.c wye_router)
add_dependencies(test_score_cli wye)
