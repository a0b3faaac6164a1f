//! Model decay: realised churn metrics of score runs whose labels have matured.
