"""`auxcli analyze`: what auxiliary tasks did to the learned representation (paper.md, "Future work").

`similarity` (linear CKA), `probe` (closed-form ridge classifier), `embedding` (PCA, t-SNE) are pure
functions of feature matrices; `features` turns run folders and MLflow runs into those matrices;
`analyze` writes the csv/json/PNG files and logs them to an MLflow analysis run.
"""
