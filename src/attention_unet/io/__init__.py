"""Files in and out: finding and opening images (:mod:`.images`), the datasets (:mod:`.data`),
the pixel and size limits (:mod:`.limits`), the output folder (:mod:`.outputs`), measurements,
ROIs and GeoJSON (:mod:`.measure`) and the HTML reports (:mod:`.reports`)."""
