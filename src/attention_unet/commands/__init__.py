"""What the command line runs beyond argument parsing: predict's file loop (:mod:`.predict`),
evaluate and the demo (:mod:`.evaluate`)."""
